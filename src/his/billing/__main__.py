from his.billing.app import build
from his.kernel.service import main

main(build)
