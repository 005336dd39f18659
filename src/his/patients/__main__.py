from his.kernel.service import main
from his.patients.app import build

main(build)
