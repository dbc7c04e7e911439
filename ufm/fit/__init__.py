"""Fitting the UFM: the one run loop, its steppers (autograd, fused GD), optimizers, schedule, measurements."""
