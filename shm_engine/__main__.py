from shm_engine.ops.cli import main

raise SystemExit(main())
