from his.gateway.app import main

main()
