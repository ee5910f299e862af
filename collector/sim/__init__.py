"""The simulated fleet's parts: GPU models (datasheets), power/clock physics, fleet scenarios, ground truth."""
