from his.audit.app import build
from his.kernel.service import main

main(build)
