from newbie.cli.main import main

raise SystemExit(main())
