"""The nodes: detector (and, as they land, recorder, replay, hazard map), each written once
against the :class:`~vad_inspection.transport.Bus`, never importing rclpy or Cyclone DDS, with a
console entry point per node and the graph described once in :mod:`.graph`."""
