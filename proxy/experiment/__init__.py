"""The experiment machinery both modes share: the shadow runner, the publisher and its sinks."""
