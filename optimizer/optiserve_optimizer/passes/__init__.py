"""The optimization passes; each module exposes one ``Pass`` object and the registry maps names."""
