"""Pure functions for the difficulty maths: numpy/torch in, arrays out, no Lightning."""
