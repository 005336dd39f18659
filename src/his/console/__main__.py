from his.console.app import main

main()
