"""The sandbox: the broker, the Microsoft emulator and a demo provider portal on one laptop."""
