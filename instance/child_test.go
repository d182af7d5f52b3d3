package instance_test

const childEnv = "INSTANCE_TEST_CHILD"

func childMain() int { return 0 }
