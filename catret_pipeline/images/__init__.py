"""Image acquisition: local mirror or HTTP(S) download, decode validation, content-addressed cache.

Pure logic lives in :mod:`.fetch` (one URL -> :class:`~.fetch.FetchResult`) and :mod:`.cache`
(the on-disk layout and the URL index); :mod:`.resources` holds the ``image_fetcher`` resource
and :mod:`.assets` the ``product_images`` asset. See docs/images.md.
"""
