from cagnet.cli import main

raise SystemExit(main())
