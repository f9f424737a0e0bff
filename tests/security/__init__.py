"""Abuse tests: one test per attack on the engine, each showing that the
attack fails and that honest nodes keep their exact scores
(docs/security.md lists them with the defence each one checks)."""
