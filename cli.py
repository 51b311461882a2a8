"""`python cli.py ...` from a checkout: the same command line as the installed `auditor`.

The command line itself lives in the package (`auditor/cli.py`), so a wheel install has it."""

from auditor.cli import main

if __name__ == "__main__":
    main()
