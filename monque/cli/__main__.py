from monque.cli import main

main()
