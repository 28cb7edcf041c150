"""``attnguide explore``: a local web page to see why guidance worked or failed on a prompt.

A small ASGI app (``app.py``) over one ``ExploreSession`` (``session.py``): the page's settings
become a recipe (``page_recipe.py``) that the recipe loader validates, the engine generates it
with the ``heatmaps`` callback capturing every step's maps, and ``maps.py`` draws them.
Nothing here generates by another path than ``attnguide run``.
"""
