"""Training engines: the fused CPU kernel (:mod:`landscape.engine.fused`) and thread control."""
