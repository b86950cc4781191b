"""Where state lives: the SQLite database and the files under data_dir. May import media and errors."""
