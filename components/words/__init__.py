"""Word-split shards: MeCab runs once per shard, for every variant that splits words the same way."""
