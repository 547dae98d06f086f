"""Looking at a layout without loading its data: ``info``, ``tree`` and ``validate``."""
