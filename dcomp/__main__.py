from dcomp.cli import main

main()
