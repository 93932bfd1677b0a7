"""Training-time code for the Mix, Align, Distil recipe. Imports ``amf``; ``amf`` never imports this."""
