"""The application layer: the job registry, the command line, the demo and the Python front door."""
