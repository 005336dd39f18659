"""Generate ``src/his/proto`` from the contracts in ``proto/`` (``make proto``).

The contracts live at ``proto/his/<service>/v1/*.proto`` so that their import paths and
package names read ``his.<service>.v1``. protoc names Python modules after the file path, which
would make them ``his.<service>.v1`` too and collide with the service packages; so the code is
generated into a scratch directory and moved under ``his.proto`` (``his.proto.patients.v1``),
with the generated imports rewritten to match. Python protoc has no option for a module prefix.

Output per file: messages (``_pb2.py``), their stubs (``_pb2.pyi``), gRPC stubs and servicers
(``_pb2_grpc.py``) and typed stubs for those (``_pb2_grpc.pyi``, from mypy-protobuf).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto"
TARGET = ROOT / "src" / "his" / "proto"
HEADER = '"""Generated from proto/ by tools/protogen.py (make proto). Do not edit."""\n'

# Generated modules refer to each other as ``his.<service>.v1.<file>_pb2``: move them under his.proto.
_IMPORT = re.compile(r"^(from|import) his\.(?!proto\.)", re.MULTILINE)
_BUILDER = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'his\.(?!proto\.)")


def rewrite(source: str) -> str:
    source = _IMPORT.sub(r"\1 his.proto.", source)
    return _BUILDER.sub(r"\1'his.proto.", source)


def generate(into: Path) -> list[Path]:
    """Write the generated package (``__init__.py`` files included) into ``into``, which must not exist."""
    protos = sorted(PROTO.rglob("*.proto"))
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    include = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-I{PROTO}",
            f"-I{include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--plugin=protoc-gen-mypy_grpc={plugin}",
            f"--mypy_grpc_out=quiet:{scratch}",
            *(str(p) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        for src in sorted((Path(scratch) / "his").rglob("*")):
            if src.is_dir():
                continue
            dest = into / src.relative_to(Path(scratch) / "his")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(rewrite(src.read_text()))
            written.append(dest)
    for package in [into, *(d for d in sorted(into.rglob("*")) if d.is_dir())]:
        (package / "__init__.py").write_text(HEADER)
        written.append(package / "__init__.py")
    return sorted(written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TARGET, help="package directory to (re)write")
    out: Path = parser.parse_args().out.resolve()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fresh = Path(tmp) / "proto"
        files = generate(fresh)
        shutil.rmtree(out, ignore_errors=True)
        fresh.rename(out)
    print(f"wrote {len(files)} files under {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
