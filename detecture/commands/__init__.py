"""Sub-commands of the ``detecture`` CLI, one module each (see ``detecture.cli``)."""
