"""The ground floor every other package stands on: typed errors with one vocabulary of
refusal reasons, and the one TOML loader. Imports nothing from ``hedui`` (DESIGN.md
"Layout and imports": the import graph is a tree)."""
