"""Beyond one host: the score feed, mirrors and federated zones (docs/scale-out.md).

- `publisher`: the engine's feed child (`feed_main`), which follows the latch
  and publishes every epoch on a ZeroMQ XPUB socket, and applies the
  feedback mirrors send back (`FeedbackSink`).
- `mirror`: ``shm-engine mirror``, which subscribes to one or more feeds and
  publishes them into a local segment of the engine's layout (`Mirror`).
- `format`: the frames, byte for byte (docs/feed-format.md).
"""
