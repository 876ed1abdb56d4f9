"""The Lambda handlers, one package each; tests and dev tools import them as functions.<name>.app."""
