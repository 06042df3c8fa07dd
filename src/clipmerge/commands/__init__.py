"""One module per `clipmerge` subcommand (``x-y`` is ``x_y.py``): ``configure(parser)`` declares the
arguments, ``run(args)`` turns them into plain values and calls the library. No logic lives here."""
