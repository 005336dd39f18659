from his.kernel.service import main
from his.notifications.app import build

main(build)
