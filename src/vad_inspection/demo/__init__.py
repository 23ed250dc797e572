"""``vad-inspection demo`` (``make demo``): the product at work on scenarios with ground truth.

Each scenario runs as a robot would run it: the player plays the scenario's bag, and the
detector, the hazard map and the recorder each run in their own process over Cyclone DDS. The
detector's model is fitted first on a clean pass of the same kind of scene (never the test
pass). At the end of the pass the recorder is asked for one downlink window. Then everything is
scored against the scenario's truth and written as one HTML report: detection (image and pixel
AUROC, said plainly when no better than chance), the hazard grid over the terrain with its cell
precision and recall, the landing sites against random ones, and what the recorder sent.
"""
