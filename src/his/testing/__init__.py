"""In-memory fakes of the services' ports, for unit tests and `his bench` baselines.

Each fake keeps its state in dicts and implements the same Protocol as the PostgreSQL store it
stands for (``his.<service>.ports``); the contract tests (``tests/integration/test_*_contract.py``)
run one set of tests against both, so a use case tested on the fake behaves the same on the
database. The services never import this package (an import contract in ``pyproject.toml``).
"""
