from his.kernel.service import main
from his.scheduling.app import build

main(build)
