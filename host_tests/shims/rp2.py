"""rp2 for the board tests: bootsel_button() answers `button` (1: BOOTSEL held)."""

button = 0


def reset():
    global button
    button = 0


def bootsel_button():
    return button
