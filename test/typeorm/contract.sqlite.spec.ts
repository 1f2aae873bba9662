import { describeLockBackendContract } from '../contract/lock-backend.contract';
import { contractHarness } from './sql-fixture';

describeLockBackendContract('typeorm sqlite, lease mode', () => contractHarness('sqlite', 'lease'));
