from his.kernel.service import main
from his.laboratory.app import build

main(build)
