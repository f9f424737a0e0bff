"""``python -m shm_engine.wire``: rewrite the generated compiled check
(`_checks.py`) from the rule table, after `format.FIELDS` changed."""

from shm_engine.wire.rulecode import main

raise SystemExit(main())
