"""``python -m poisoncert.cli``: the same as the ``poisoncert`` console script."""

from poisoncert._console import main

if __name__ == "__main__":
    main()
