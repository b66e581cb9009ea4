from hedui.node.cli import main

main()
