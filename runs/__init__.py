"""A run's verbs, one module each: settings, data, train, test, colorize, classifier (and the
weights a test or colorization loads). main.py parses the command line and calls them."""
