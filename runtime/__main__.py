"""``python -m runtime worker``: a worker process; ``python -m runtime ARGS``: the ``sim`` command
(``python -m runtime live ...`` under torchrun, where every rank runs the same command)."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "worker":
    from runtime.worker import main

    sys.exit(main())
else:
    from simulator.cli import main

    main()
