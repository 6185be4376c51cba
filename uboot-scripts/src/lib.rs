//! U-Boot script images, boot flows, LAVA placeholders and the labboot SD card.
