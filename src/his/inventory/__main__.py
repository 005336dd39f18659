from his.inventory.app import build
from his.kernel.service import main

main(build)
