from his.kernel.service import main
from his.practitioners.app import build

main(build)
