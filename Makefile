# Convenience targets; npm scripts are the source of truth.
.PHONY: build typecheck lint test

build:
	npm run build

typecheck:
	npx tsc --noEmit

lint:
	npm run lint

test:
	npm test
