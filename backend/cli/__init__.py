"""Entry points and processes: the `pulseboard` command, `up`, `serve`, `import`, the embedded Redis."""
