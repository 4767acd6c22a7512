"""How protoreg speaks to its caller: the command line (:mod:`.cli`), progress display
(:mod:`.display`), messages in the caller's words (:mod:`.voice`) and warnings attributed to the
caller's line (:mod:`.caller`)."""
