"""`python -m reid3dsl.body.standin --out DIR [--resolution low|full] [--seed N] [--force]`."""

from reid3dsl.body.standin.cache import main

if __name__ == "__main__":
    main()
