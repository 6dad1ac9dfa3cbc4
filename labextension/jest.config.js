/** Jest runs the pure TypeScript models (tags, colours, layout) under Node; no browser. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  testRegex: '.*\\.spec\\.ts$'
};
