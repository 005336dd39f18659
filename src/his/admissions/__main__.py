from his.admissions.app import build
from his.kernel.service import main

main(build)
