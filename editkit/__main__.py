from editkit.cli.main import main

main()
