"""The ``hedui`` command line."""

def main() -> None:
    from hedui.node.cli._app import run
    run()
