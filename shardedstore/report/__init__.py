"""Looking at a layout without loading its data (above ``shards``): ``info`` (``info``
and ``tree``) and ``validate``."""
