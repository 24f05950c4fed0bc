"""Presentation-attack simulation and evaluation: `facegate liveness-eval`.

A seeded generator renders door-camera sequences (640x480, 10 fps, pinhole camera of about
60 degrees) of attack species and bona fide presentations from enrollment-quality photos,
and runs them through the real detector, landmarks, tracker and liveness stage. Rates are
simulated and say so; the real captures in the repository are smoke tests, not rates.

- `scene`: camera, poses, trajectories, the hallway behind the visitor
- `surfaces`: what is rendered: a print (flat or bent), a screen, a head from the mesh
- `render`: surfaces into frames by inverse mapping (no OpenGL, numpy and OpenCV only)
- `species`: one generator per attack species and for bona fide visitors
- `evaluate`: APCER / BPCER with counts and Clopper-Pearson bounds, time to decision
"""
